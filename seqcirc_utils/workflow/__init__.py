"""Workflow: running notebooks (papermill runner and cache), parameter grids on Dask, the book's build step and the seqcirc command line. The top layer: nothing imports it."""
