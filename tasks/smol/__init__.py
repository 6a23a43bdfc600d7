"""The muse_smol world: a pretrained model from the package registry fine-tuned on the tiny world's people."""
