"""Reference scores for the isolation-forest agreement test.

Usage: sklearn_scores.py TRAIN.csv TEST.csv
Fits scikit-learn's IsolationForest (100 trees, max_samples='auto', contamination 0.05) on
TRAIN (CSV of numbers, no header) and prints score_samples for each row of TEST, one per line.
"""

import sys

import numpy as np
from sklearn.ensemble import IsolationForest


def main() -> None:
    train = np.loadtxt(sys.argv[1], delimiter=",", ndmin=2)
    test = np.loadtxt(sys.argv[2], delimiter=",", ndmin=2)
    forest = IsolationForest(n_estimators=100, max_samples="auto", contamination=0.05, random_state=0)
    forest.fit(train)
    for score in forest.score_samples(test):
        print(repr(float(score)))


if __name__ == "__main__":
    main()
