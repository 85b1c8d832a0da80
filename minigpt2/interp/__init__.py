"""The interpretability wing, at TransformerLens's depth: named activations and the cache (internals.py),
the residual stream taken apart (attribution.py), activation and attribution patching (patching.py), head
detectors (heads.py), sparse autoencoders (sae.py), weight processing (processing.py), and plots of all of
them (plots.py). model.run_with_cache and its siblings come from mixin.py."""
