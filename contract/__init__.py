"""What every stage of playrecall agrees on, with no dependencies: the data contract
(features.py: feature names, labels, signatures) and the settings (settings.py)."""
