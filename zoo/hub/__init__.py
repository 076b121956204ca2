from .cards import index_table, model_card
from .checkpoint import FORMAT_VERSION, PACKING, CheckpointError, load_checkpoint, read_config, save_checkpoint
from .model import BinaryModel, from_pretrained, pack_model
