"""Data: corpus reading, pre-training instances and shards, masking, collation."""
