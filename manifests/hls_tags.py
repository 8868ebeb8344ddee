"""HLS tag and attribute spellings (RFC 8216 section 4.3), in one place for writer and tests."""

EXTM3U = "#EXTM3U"
VERSION = "#EXT-X-VERSION"
TARGETDURATION = "#EXT-X-TARGETDURATION"
PLAYLIST_TYPE = "#EXT-X-PLAYLIST-TYPE"
INDEPENDENT_SEGMENTS = "#EXT-X-INDEPENDENT-SEGMENTS"
MAP = "#EXT-X-MAP"
EXTINF = "#EXTINF"
BYTERANGE = "#EXT-X-BYTERANGE"
ENDLIST = "#EXT-X-ENDLIST"
STREAM_INF = "#EXT-X-STREAM-INF"

# attributes
URI = "URI"
ATTR_BYTERANGE = "BYTERANGE"
BANDWIDTH = "BANDWIDTH"
AVERAGE_BANDWIDTH = "AVERAGE-BANDWIDTH"
CODECS = "CODECS"

# fMP4 Media Segments and EXT-X-MAP in a Media Playlist without I-frames need version 6+;
# version 7 is the first whose BANDWIDTH is the peak segment bit rate (RFC 8216 7).
PROTOCOL_VERSION = 7
VOD = "VOD"
