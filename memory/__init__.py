"""Durable memory: SQL schema, the FAISS index wrapper, and the store keeping them consistent."""
