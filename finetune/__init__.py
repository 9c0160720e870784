"""Fine-tuning on face tasks at 100/10/2% of the labels, and the redundancy curve.
"""
