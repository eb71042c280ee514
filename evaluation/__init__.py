"""The side-by-side evaluation behind `rudder bench` (docs/bench.md)."""
