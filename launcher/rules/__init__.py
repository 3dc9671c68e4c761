"""Validation rules: each module registers its rules with launcher.validation.rule."""
