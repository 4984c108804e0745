"""PushedModelBaseline: the model TF Serving currently serves, as the Evaluator's baseline."""
