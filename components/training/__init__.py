"""What the training steps (pretrain, finetune) share: the loop, checkpoints, batch plans,
distributed launch. No step imports another step; both import this."""
