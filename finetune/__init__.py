"""Fine-tuning on face tasks at 100/10/2% of the labels, and the redundancy curve.

- config.py     `FinetuneConfig` (task, data, inits, fractions, seeds, search space, training), run hashes
- datasets.py   loaders: landmarks5 lists, iBUG .pts, path,label / regression manifests, pairs, Yale names
- augment.py    one affine warp for image + landmarks (scale/rotate/shift, flips swap left/right)
- heads.py      trunk stages, heatmap head (3x 1x1 conv 256 + bilinear up + skips), linear, CosFace
- decode.py     Gaussian heatmap targets and sub-pixel decoding
- losses.py     heatmap MSE, L2/CCC regression, soft cross-entropy for distillation
- metrics.py    NME (inter-ocular, diagonal), accuracy/macro-F1, ICC(3,1)/CCC/RMSE/Pearson, TAR@FAR
- tasks.py      the four tasks (head + loss + metrics) and the hashed test split
- trainer.py    one trainer: init (scratch/backbone.pt/torchvision), full or linear, AMP, resume
- fractions.py  nested deterministic training fractions, key lists, the search's validation split
- search.py     hyper-parameter search per data point on a validation split, cached by hash
- distill.py    self-distillation from a fine-tuned teacher on an unlabelled pool (paper 3.5)
- grid.py       inits x fractions x seeds, one result JSON per run, resumable, ranks split the runs
- curve.py      table (mean ± std over seeds), plot, and the redundancy index with its uncertainty
"""
