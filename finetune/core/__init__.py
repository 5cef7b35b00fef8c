"""The core every other subpackage stands on: params, the stage runner, errors, files, figures, the hub check,
the cores rule and the prediction contract (numpy only). It imports nothing above it."""
