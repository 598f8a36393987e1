"""Tasks: tokenizer-aware sequence-continuation and greater-than datasets, templates, corruptions, filters, and the behaviour table. Imports core and models."""
