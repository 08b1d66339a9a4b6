"""The built datasets, one spec file each (registered on import by :func:`foundry3d.data.catalogue.catalogue`)."""
