"""AU-detector training (host side, PyTorch): the losses, targets, trainers and evaluation of the
three AU-detection papers: LP-Net (Niu et al., CVPR 2019), GTLE-Net (expression-embedding
transfer) and the knowledge-driven self-supervised representation learning of Chang & Wang
(CVPR 2022, "KDSRL" here).

Flow: FER+ (pseudo AU labels) or BP4D/DISFA (real AU labels) -> ``train_from_config`` -> checkpoint
-> ``export_au_detector`` -> ONNX (input ``image`` [+ ``landmarks``], output ``au_probs``) + card.
Nothing downstream imports this package.
"""
