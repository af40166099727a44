"""A worker: one child process, one pjsua2 Endpoint, at most 8 accounts of one worker key."""
