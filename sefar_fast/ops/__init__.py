"""The method's pure mathematics, shared by the trainer, the evaluators and the kernels.

    elements    the dual-level temporal elements: which segments each takes, their time order
    views       view parameters (crops, flips, frame orders, channel dropout) and the torch view builder
    regulation  Adaptive Regulation: pseudo-labels and loss weights from U teacher predictions
    mixing      tube masks, partners and mixed targets
    losses      the SeFAR loss terms
    attention   the backbone's attention: per frame, and in time within each temporal element

Everything here is a function of its arguments (randomness comes in as a Generator);
`sefar_fast.kernels` implements the hot parts on the GPU with these as references.
"""
