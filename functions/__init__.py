"""KlipNote's functions: one folder each, hosted unchanged by events.runtime."""
