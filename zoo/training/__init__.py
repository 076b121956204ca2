from .module import ZooClassifier
