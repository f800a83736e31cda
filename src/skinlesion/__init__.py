"""skinlesion: a reproducible HAM10000 skin-lesion classification pipeline."""

__version__ = "0.1.0"

# The seven HAM10000 diagnoses, in the column order every table and model output uses.
CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
# Diagnoses counted as malignant for the binary task and for p_malignant.
MALIGNANT: tuple[str, ...] = ("akiec", "bcc", "mel")
