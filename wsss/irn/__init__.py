"""IRN's semantic half (Ahn et al., CVPR 2019): a class boundary network trained on the
pseudo masks' pixel relations, and the random walk that spreads the CAMs within the
boundaries it finds.

    indexing   the pixel pairs (half disk of radius r at stride 4), their paths, relation labels
    loss       pair affinities from a boundary map, the affinity loss
    model      BoundaryNet (frozen ResNet + five-branch boundary head), boundary_map (image + flip)
    walk       the transition matrix and the walk: dense (the reference's) and sparse (a stencil)
    labels     one image's label map from its CAM file and boundary map; make_irn_labels over a split
    data       AffinityDataset: train_irn's augmented image + mask at stride 4
    training   the stages' work: train_irn, make_irn_labels, eval_irn (the recipe: wsss.config.IRNConfig)
"""
