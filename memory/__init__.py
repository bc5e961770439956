"""Durable memory: the SQL schema, the store (SQL writes, catch-up) and its RAM view
(FAISS index + fp16 pairs), refits and snapshots.
"""
