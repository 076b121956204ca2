from .digits import DIGITS_MEAN, DIGITS_STD, DigitsDataModule, digits_split, load_digits_tensors
