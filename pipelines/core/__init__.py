"""Shared 3D core: cameras, rays, sampling, compositing, encodings, fields, metrics, geometry, exports."""
