"""LongBench v2's own answer extraction and scoring, vendored for the LongBench v2 tests only.

Source: https://github.com/THUDM/LongBench (top level, the v2 code): ``pred.py`` (``extract_answer``) and
``result.py`` (its loop over a results folder, wrapped in :func:`result_rows` instead of writing
result.txt). MIT License, Copyright (c) 2023 THU-KEG & Zhipu AI. Do not import this from library code:
it is the reference the library is compared against.
"""
import json
import os
import re


def extract_answer(response):
    response = response.replace('*', '')
    match = re.search(r'The correct answer is \(([A-D])\)', response)
    if match:
        return match.group(1)
    else:
        match = re.search(r'The correct answer is ([A-D])', response)
        if match:
            return match.group(1)
        else:
            return None


def result_rows(results_dir):
    """result.py on ``results_dir``: the lines it writes to result.txt (header first)."""
    files = os.listdir(results_dir)
    output = ["Model\tOverall\tEasy\tHard\tShort\tMedium\tLong"]
    compensated = False

    for file in files:
        filename = os.path.join(results_dir, file)
        try:
            pred_data = json.load(open(filename, encoding='utf-8'))
        except Exception as e:
            pred_data = [json.loads(line) for line in open(filename, encoding='utf-8')]
        easy, hard, short, medium, long = 0, 0, 0, 0, 0
        easy_acc, hard_acc, short_acc, medium_acc, long_acc = 0, 0, 0, 0, 0
        for pred in pred_data:
            acc = int(pred['judge'])
            if compensated and pred["pred"] == None:
                acc = 0.25
            if pred["difficulty"] == "easy":
                easy += 1
                easy_acc += acc
            else:
                hard += 1
                hard_acc += acc

            if pred['length'] == "short":
                short += 1
                short_acc += acc
            elif pred['length'] == "medium":
                medium += 1
                medium_acc += acc
            else:
                long += 1
                long_acc += acc

        name = '.'.join(file.split('.')[:-1])
        output.append(name+'\t'+str(round(100*(easy_acc+hard_acc)/len(pred_data), 1))+'\t'+str(round(100*easy_acc/easy, 1))+'\t'+str(round(100*hard_acc/hard, 1))+'\t'+str(round(100*short_acc/short, 1))+'\t'+str(round(100*medium_acc/medium, 1))+'\t'+str(round(100*long_acc/long, 1)))
    return output
