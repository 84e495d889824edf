"""Private helpers of the package, one module per job; nothing here knows about networks.

- :mod:`.cache`: the user cache and the names of the files cached in it;
- :mod:`.files`: atomic writes (all or none, with the umask's permissions);
- :mod:`.digest`: content hashes that key cached results;
- :mod:`.packages`: optional packages and data files inside installed wheels, found without importing them;
- :mod:`.threads`: torch's thread count for a block;
- :mod:`.distributed`: the process group under ``torchrun``;
- :mod:`.checks`: checks of the values a user gives a network (scales, scheme parameters).
"""
