"""The pretrain step: masked- or causal-LM pretraining before fine-tuning."""
