"""Dashboard for VQGAN+CLIP run folders: catalog, synced-grid app, and static export."""
