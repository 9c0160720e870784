"""SwAV pretraining of torchvision ResNets on face shards, from one CPU to many GPUs.

- backbone.py   torchvision ResNet trunks and loading `backbone.pt` (shared with analysis/finetune)
"""
