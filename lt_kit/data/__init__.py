"""Long-tailed data sets: subsets, splits, in-memory and file loaders, augmentation."""
