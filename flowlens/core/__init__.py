"""Core records: token layout, capture, token graph, frame transform."""
