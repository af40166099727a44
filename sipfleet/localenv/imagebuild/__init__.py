"""Build sipfleet's own images (operator, agent) here, from ``images/Dockerfile.*``, with no network inside the
build; the same Dockerfiles build unchanged with ``docker build`` on a normal machine.

- ``base``: the Python base image, Debian bookworm made with debootstrap, as an OCI layout (cached by inputs).
- ``pins`` / ``wheelhouse``: the images' pinned Python dependencies and the directory of wheels pip downloads
  on the host for them (cached by the pins).
- ``buildkit``: our own ``buildkitd`` (state under the cache, loopback-only networking, public sources denied)
  and the ``buildctl build`` command line.
- ``build``: which images need building (a key over all their inputs), building them, listing what is built.
- ``containerd``: ``import_images(archives, address=...)`` for the cluster code (``ctr images import``).
- ``run``: run a built image in a real container with runc (read-only root, its USER), for tests.
- ``targets`` (image names from the chart), ``oci`` (layouts and archives), ``cache``, ``hostfs``: helpers.
- ``cli``: ``sipfleet images build [--list]`` and ``sipfleet images lock``.

Not to be confused with ``sipfleet.localenv.images``, the old node runner's table of programs.
"""
