"""Static checks of template.yaml (translation, cfn-lint, checkov, template rules).

Run them all with ``.venv-dev/bin/python -m tests.static [TEMPLATE]``.
"""
