"""Analysis: embeddings, perceptual hashes, near-duplicates and redundancy reports (faiss, imagehash).
"""
