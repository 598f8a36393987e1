"""Models: loading a model spec (embedded GGUF, hub ids, local directories, random test models) into a TransformerLens bridge, and batched final-position forward passes. Imports only core."""
