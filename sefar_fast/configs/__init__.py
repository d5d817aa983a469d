"""Presets shipped with the package (YAML); see sefar_fast.config."""
