"""guichet."""
