"""Curate: crawl Flickr into a catalog, then download, detect, align and crop faces into shards.
"""
