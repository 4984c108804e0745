"""ServingPusher: TFX's Pusher, publishing each model version in one step."""
