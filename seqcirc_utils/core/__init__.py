"""Core vocabulary: component names and circuits (types), the torch-free choices (options), typed result records, statistics, metrics and the results directory. Imports no other layer."""
