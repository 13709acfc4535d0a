/* ensemble.h - one or more nets answering as one model (averaged
 * probabilities). A single net is an ensemble of one, so programs that
 * serve or evaluate models use only this interface.
 *
 *   nn_ensemble *e = nn_ensemble_load("a.safetensors,b.safetensors", err, n);
 *   nn_ensemble_ws *ws = nn_ensemble_ws_create(e, 1);   // one per thread
 *   nn_ensemble_forward(e, ws, x, 1, probs);            // no allocation
 *   nn_ensemble_ws_free(ws); nn_ensemble_free(e);
 *
 * Members must agree on input shape and number of classes; labels and
 * dataset come from the first member. The struct is private: members are
 * reached through nn_ensemble_member and friends.
 */
#ifndef NN_ENSEMBLE_H
#define NN_ENSEMBLE_H

#include "nn/net.h"

#define NN_MAX_MEMBERS 8

typedef struct nn_ensemble nn_ensemble;

typedef struct nn_ensemble_ws nn_ensemble_ws;

/* File names of models: "STEM.safetensors" (a weights file) or
 * "STEM.ensemble" (a list). Returns the length of STEM (the model's name
 * wherever one is needed) and sets *is_list (may be NULL); 0 for any
 * other name or an empty stem. */
size_t nn_model_stem(const char *name, int *is_list);

/* paths: one path, or several separated by commas, or one NAME.ensemble
 * list (see nn_ensemble_list_read). NULL + err on failure. */
nn_ensemble *nn_ensemble_load(const char *paths, char *err, size_t errlen);

/* Reads a NAME.ensemble list: one member weights file per line (relative
 * to the list's directory unless absolute), '#' comments, blank lines, and
 * optionally "test_accuracy=0.9971", the ensemble's own measured figure
 * (*accuracy, else -1). paths gets the members joined by commas, for
 * nn_ensemble_load. 0, or -1 + err (unreadable, no members, a bad
 * figure, a ',' in a name, more than pathslen). */
int nn_ensemble_list_read(const char *path, char *paths, size_t pathslen, double *accuracy,
                          char *err, size_t errlen);
/* Only regular files of up to NN_LIST_MAX bytes are read (a FIFO or a
 * device is refused without blocking). */
#define NN_LIST_MAX 65536

/* The parser behind nn_ensemble_list_read, over text[0..len) as read from
 * path (which names the list in messages and gives the directory relative
 * members are found in; nothing is opened). A NUL byte or a line over
 * 1099 bytes is an error. */
int nn_ensemble_list_parse(const char *text, size_t len, const char *path, char *paths,
                           size_t pathslen, double *accuracy, char *err, size_t errlen);
/* Takes ownership of n nets (n >= 1). NULL + err on mismatch (input
 * shape, class count, or meta.preprocess: one image feeds every member). */
nn_ensemble *nn_ensemble_from_nets(nn_net **nets, int n, char *err, size_t errlen);
void nn_ensemble_free(nn_ensemble *e);

/* An ensemble of one that borrows net (not owned, not folded): for
 * evaluating a net being trained with nn_eval_probs. NULL when out of
 * memory. nn_ensemble_free frees the view, never net. */
nn_ensemble *nn_ensemble_view(const nn_net *net);

/* Members: how many; member i as trained (what summaries and parameter
 * counts report); the net forward runs for it (batch norm folded into the
 * layer before it when there was one, nn_net_fold_bn); and the file it was
 * loaded from ("" when built from nets). i in [0, nn_ensemble_size). */
int nn_ensemble_size(const nn_ensemble *e);
const nn_net *nn_ensemble_member(const nn_ensemble *e, int i);
const nn_net *nn_ensemble_member_infer(const nn_ensemble *e, int i);
const char *nn_ensemble_path(const nn_ensemble *e, int i);

/* Drops the inference plans (nn_net_unplan) of the nets forward runs
 * (folded copies, or members planned in place): every convolution then
 * runs directly, packing its weights per call where its kernel does. For
 * benchmarks that compare the two; safe with existing workspaces. */
void nn_ensemble_unplan(nn_ensemble *e);

/* Metadata of the model: first member's, with test_accuracy left as the
 * first member's (callers that know the ensemble's own figure keep it). */
const nn_meta *nn_ensemble_meta(const nn_ensemble *e);
int nn_ensemble_classes(const nn_ensemble *e);
size_t nn_ensemble_params(const nn_ensemble *e);

nn_ensemble_ws *nn_ensemble_ws_create(const nn_ensemble *e, int max_batch);
void nn_ensemble_ws_free(nn_ensemble_ws *ws);

/* x [n,C,H,W] 0..1 -> probs [n,nclasses], the mean of the members'. */
void nn_ensemble_forward(const nn_ensemble *e, nn_ensemble_ws *ws, const float *x, int n,
                         float *probs);

/* The out-of-distribution statistics the ensemble answers with: its
 * first member's (net->ood of the net forward runs), or NULL. An
 * ensemble's score is its first member's score (the members' features
 * live in different spaces; the first is the ensemble's reference). */
const struct nn_ood *nn_ensemble_ood(const nn_ensemble *e);

/* nn_ensemble_forward, the same single pass, also writing per image, for
 * each output that is not NULL:
 *   energy [n]  the mean over members of -logsumexp(logits): the energy
 *               score, higher = less like the training data;
 *   ood [n]     the Mahalanobis score (nn/ood.h) of the first member's
 *               features; only when nn_ensemble_ood(e) is not NULL (ood
 *               must be NULL otherwise). */
void nn_ensemble_forward_scores(const nn_ensemble *e, nn_ensemble_ws *ws, const float *x, int n,
                                float *probs, float *energy, float *ood);

/* nn_ensemble_forward_scores, also writing, when disagree is not NULL,
 * each image's disagreement of the members (nn_disagreement of their
 * probabilities; 0 for an ensemble of one). Same single pass. */
void nn_ensemble_forward_disagree(const nn_ensemble *e, nn_ensemble_ws *ws, const float *x, int n,
                                  float *probs, float *energy, float *ood, float *disagree);

/* How much m members' answers to one image disagree: the mutual
 * information between the member and the answer,
 *     H(mean_i p_i) - mean_i H(p_i)   (nats, 0..log min(m, k)),
 * which is also the mean over members of KL(p_i || mean p): 0 when all
 * give the same probabilities, whatever they are, and largest when each
 * is sure of another class ("Simple and Scalable Predictive Uncertainty
 * Estimation using Deep Ensembles", Lakshminarayanan et al., 2017, score
 * images this way). p [m, k] are the members' probabilities (rows sum to
 * 1); computed in double, terms with p = 0 adding nothing. m >= 1,
 * k >= 1. */
float nn_disagreement(const float *p, int m, int k);

#endif
