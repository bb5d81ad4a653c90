"""The write side: parse CloudEvents, decide in group-commit rounds, append atomically."""
