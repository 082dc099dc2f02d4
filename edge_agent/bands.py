"""Channel identifiers: one number per (band, channel), shared by the parser and the visits.

802.11 numbers channels per band and the numbers repeat: 6 GHz channel 1 (5955 MHz) is not
2.4 GHz channel 1 (2412 MHz). The hub keys a sensor's signal levels by the channel a visit was
heard on and links visits with them, so an identifier must name the band too:

* 2.4 GHz: the channel number, 1-14 (2412-2472 MHz every 5 MHz; 14 is 2484 MHz);
* 5 GHz: the channel number, 32-177 (5160-5885 MHz every 5 MHz);
* 6 GHz: 1000 + the channel number, 1001-1233 (5955-7115 MHz every 20 MHz: 1001, 1005, ...;
  1002 is 5935 MHz).

2.4 and 5 GHz keep their plain numbers, so visits of sensors on those bands read as before and
as ``iw`` prints them. 6 GHz gets a range no 2.4/5 GHz channel number reaches, and one that is
not a frequency in MHz either. Anything else is unknown (None): off the 5 MHz raster, the 4.9 GHz
band, and 5 GHz numbers below 32 (5035-5155 MHz), which would collide with 2.4 GHz numbers.

A visit keeps its channels as a bit set (:func:`channel_bit`). The bits below 64 fit the
tracker's 64-bit column and cover every 2.4 GHz channel and the 5 GHz 20 MHz raster (36-144
and 149-177 sit on different multiples of 4, so they need two runs); the rest (6 GHz, 5 GHz
numbers off that raster) get bits from 64 up, which the tracker keeps in a side table.
"""

from __future__ import annotations

__all__ = ["SIX_GHZ", "channel_bit", "channels_of", "freq_to_channel"]

SIX_GHZ = 1000  # added to a 6 GHz channel number

# bits below 64: 2.4 GHz 1-14 at 1-14, 5 GHz 32-144 (step 4) at 15-43, 149-177 (step 4) at 44-51
_LOW_A, _LOW_A_BIT = 32, 15
_HIGH_A, _HIGH_A_BIT = 149, 44
# bits from 64: 6 GHz channel N at 64 + N (65-297), other 5 GHz numbers C at 300 + C (332-477)
_SIX_BIT = 64
_ODD_FIVE_BIT = 300


def freq_to_channel(freq: int | None) -> int | None:
    """Channel identifier of a frequency in MHz (the radiotap channel field); None if unknown."""
    if freq is None:
        return None
    if freq == 2484:
        return 14
    if 2412 <= freq <= 2472:
        ch, rem = divmod(freq - 2407, 5)
    elif 5160 <= freq <= 5885:
        ch, rem = divmod(freq - 5000, 5)
    elif freq == 5935:  # 6 GHz channel 2, below channel 1 (802.11ax-2021 27.3.23.2)
        return SIX_GHZ + 2
    elif 5955 <= freq <= 7115:
        # 20 MHz channels only (1, 5, ... 233): the formula's "channel 2" at 5960 MHz is none,
        # and channel 2 is 5935 MHz
        ch, rem = divmod(freq - 5955, 20)
        ch = SIX_GHZ + 1 + 4 * ch
    else:
        return None
    return None if rem else ch


def channel_bit(channel: int | None) -> int:
    """Bit of a channel identifier in a visit's channel set; 0 (no bit) for an unknown one."""
    if not channel:
        return 0
    if channel <= 14:
        return channel
    if SIX_GHZ < channel <= SIX_GHZ + 233:
        return _SIX_BIT + channel - SIX_GHZ
    if not 32 <= channel <= 177:
        return 0
    if channel <= 144 and channel % 4 == 0:
        return _LOW_A_BIT + (channel - _LOW_A) // 4
    if channel >= _HIGH_A and (channel - _HIGH_A) % 4 == 0:
        return _HIGH_A_BIT + (channel - _HIGH_A) // 4
    return _ODD_FIVE_BIT + channel


def _bit_channel(bit: int) -> int:
    if bit <= 14:
        return bit
    if bit < _HIGH_A_BIT:
        return _LOW_A + 4 * (bit - _LOW_A_BIT)
    if bit < _SIX_BIT:
        return _HIGH_A + 4 * (bit - _HIGH_A_BIT)
    if bit < _ODD_FIVE_BIT:
        return SIX_GHZ + bit - _SIX_BIT
    return bit - _ODD_FIVE_BIT


def channels_of(mask: int) -> list[int]:
    """The channel identifiers of a channel set, ascending."""
    out = []
    while mask:
        low = mask & -mask
        bit = low.bit_length() - 1
        if bit:
            out.append(_bit_channel(bit))
        mask ^= low
    return sorted(out)
