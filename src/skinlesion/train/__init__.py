"""Training stage: the DataModule, the networks, the LightningModule, the train rule, the metadata
model, and model selection by cross-validation."""
