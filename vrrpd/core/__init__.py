"""The protocol: bytes and events in, decisions and effects out. No socket, no clock, no asyncio, no os.

Everything here takes `now` from its caller and returns what to do; a test holds the import rule.
"""
