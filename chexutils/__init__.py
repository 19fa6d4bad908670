"""chexutils: the helper package behind the CheXpert workbook notebooks.

Flow: data (read, validate) -> split (patient level) -> labels (policies) -> models -> train
-> predict -> metrics -> compare. Each concern lives in its own module.
"""

__version__ = "0.1.0"
