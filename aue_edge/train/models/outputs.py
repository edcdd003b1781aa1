"""The output keys of every model family (train stage): one vocabulary for AUE-CRL and the AU
detectors (LP-Net, GTLE-Net, KDSRL).

Every family's ``forward(x, ...)`` is ``forward_head(forward_features(x, ...), ...)`` (after
timm) and returns a dict whose keys are taken from :data:`OUTPUT_KEYS`: a family returns the keys
of what it computes, and a key means the same thing in every family. Logits only: the
probabilities (softmax over emotions, sigmoid per AU) are taken by the export graphs and the
prediction helpers.

These are the names inside the train stage. The exported ONNX graphs keep their own output
names (``emotion_probs``, ``au_probs``), which the model card records and the edge reads; a
checkpoint's ``final_logits`` (and the card's ``architecture.emotion_output``) names the
emotion key the export reads (``fused_logits`` or ``expr_logits``).
"""
from __future__ import annotations

OUTPUT_KEYS: dict[str, str] = {
    # emotions (AUE-CRL)
    "emotion_logits": "(N, E) the model's final expression logits: fused_logits when stage 3 "
                      "ran, else expr_logits",
    "expr_logits": "(N, E) the expression branch's classifier (AUE-CRL pred1)",
    "fused_logits": "(N, E) the classifier on expression + attended AU features (AUE-CRL pred2)",
    "expr_features": "(N, C) the expression branch's feature f_e (AUE-CRL)",
    # action units (every family)
    "au_logits": "(N, A) one logit per AU, in the model's au_names order",
    "au_features": "(N, A, D) one feature per AU (AUE-CRL: its two crops' nets)",
    "attention": "(N, A) the weight of each AU feature in the fusion (AUE-CRL KCAUS)",
    # family-specific intermediate results the losses read
    "appearance_features": "(N, C) LP-Net's f_au: the mean of the local features",
    "shape_features": "(N, C) LP-Net's f_s: P-Net's feature of the normalised landmarks",
    "au_masks": "(N, A + 1, H, W) GTLE-Net's AU masks m^k in [0, 1], the last the background",
    "reconstruction": "(N, 3, H, W) GTLE-Net's image rebuilt from the masked AU maps, in "
                      "[0, 1] (its target: GTLENet.reconstruction_target)",
    "expr_embedding": "(N, D) GTLE-Net's L2-normalised global expression embedding (GEE)",
}
