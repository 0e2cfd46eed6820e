"""mcastcam: MJPEG camera frames over UDP multicast on a LAN.

The sender (``mcastcam-send``) cuts every JPEG into sequence-numbered datagrams and
sends them to a multicast group; the receiver (``mcastcam-recv``) reassembles them and
re-serves the frames over HTTP (multipart MJPEG) and TCP. See ``docs/protocol.md``.
"""

__version__ = "0.1.0"
