"""The Moving Digits demos: the data, and the checkers that score what models make of it.

- :mod:`.moving_digits`: clips of one handwritten digit moving up, down, left or right, and game
  videos of several clips with one action each (``vidtwin demo digits``);
- :mod:`.digit_checker`: reads the digit and the direction a clip shows, and scores generated and
  cross-reenacted clips (``vidtwin demo check-generation``);
- :mod:`.two_speed`: clips whose digit drifts slowly and shakes fast at once (``vidtwin demo digits --two-speed``);
- :mod:`.split_checker`: reads digit, drift and shake, and scores what each latent of an autoencoder
  carries through cross-reenactment (``vidtwin demo check-split``);
- :mod:`.world_check`: scores a world model's rollouts step by step (``vidtwin demo check-world``);
- :mod:`.world_loss`: a world model's masked-token loss on token datasets (``vidtwin demo world-loss``).

The data and the digit checker need scikit-learn (the ``demo`` extra). Nothing else in the package
imports these modules.
"""
