"""One training loop for supervised pretraining, finetuning and SSL; checkpoints; DDP helpers."""
