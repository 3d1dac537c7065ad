"""A tiny seeded random source per simulated device (xorshift32).

MicroPython's `random` keeps one global state, so two simulated devices would disturb each
other's sequence; each simulator owns a `Prng` instead and replays exactly from its seed.

    from simulator.prng import Prng
    r = Prng(42)
    r.next_u32(); r.randint(1, 6); r.random()

Marsaglia, "Xorshift RNGs", J. Stat. Software 8(14), 2003: shifts (13, 17, 5), period 2**32 - 1.
"""

_MASK32 = 0xFFFFFFFF
_SEED_MIX = 0x9E3779B9  # golden-ratio constant: spreads small seeds (0, 1, 2...) apart


class Prng:
    """xorshift32 with state on the instance; ints stay below 2**32 (small on 64-bit ports)."""

    def __init__(self, seed=0):
        self.seed(seed)

    def seed(self, seed):
        """Restart the sequence; any int is accepted (0 is remapped, xorshift cannot hold 0)."""
        if not isinstance(seed, int):
            raise TypeError("Prng seed must be an int, got %r" % (seed,))
        s = (seed ^ _SEED_MIX) & _MASK32
        self._state = s if s else _SEED_MIX
        # Discard a few outputs so nearby seeds do not start with nearby values.
        for _ in range(4):
            self.next_u32()

    def next_u32(self):
        """The next value in [0, 2**32)."""
        x = self._state
        x ^= (x << 13) & _MASK32
        x ^= x >> 17
        x ^= (x << 5) & _MASK32
        self._state = x
        return x

    def randint(self, a, b):
        """A uniform int in [a, b], both ends included (like random.randint)."""
        if b < a:
            raise ValueError("randint(%d, %d): empty range" % (a, b))
        span = b - a + 1
        if span <= 1 << 32:
            return a + self.next_u32() % span
        # Wider ranges: combine words (rare; simulators draw small ranges).
        v = 0
        bits = 0
        while (1 << bits) < span:
            v = (v << 32) | self.next_u32()
            bits += 32
        return a + v % span

    def random(self):
        """A uniform float in [0.0, 1.0)."""
        return self.next_u32() / 4294967296.0

    def chance(self, p):
        """True with probability p (0 never, 1 always)."""
        return self.next_u32() < p * 4294967296.0
