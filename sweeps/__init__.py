"""The example sweep files, shipped inside the package as esc50ann.sweeps (see esc50ann.config.builtin_pipelines)."""
