"""The built-in pipeline files (``*.toml``), shipped inside the installed package as ``esc50ann.pipelines``."""
