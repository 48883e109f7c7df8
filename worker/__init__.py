"""Smart-routing worker: runs inference tasks for the dispatcher on a local engine."""
