"""The runners: config -> typed settings (once), one object per experiment kind, train
state and steps, checkpoints (verified), the train / evaluate / sample loops, reports."""
